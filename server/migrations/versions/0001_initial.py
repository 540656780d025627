"""Initial schema: accounts and tokens, server keys, officers and assignments, enrollment,
devices and their keys and states, request nonces, entries, conflicts, findings.

Revision ID: 0001
Revises: 
Create Date: 2026-11-22
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('enrollment_tokens',
    sa.Column('id', sa.String(length=16), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_ms', sa.BigInteger(), nullable=False),
    sa.Column('expires_ms', sa.BigInteger(), nullable=False),
    sa.Column('note', sa.String(length=200), nullable=True),
    sa.Column('server_key_id', sa.String(length=16), nullable=False),
    sa.Column('used_ms', sa.BigInteger(), nullable=True),
    sa.Column('device_id', sa.String(length=24), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_enrollment_tokens')),
    sa.UniqueConstraint('secret_hash', name=op.f('uq_enrollment_tokens_secret_hash'))
    )
    op.create_table('findings',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('subject', sa.String(length=128), nullable=False),
    sa.Column('device_id', sa.String(length=24), nullable=True),
    sa.Column('seq', sa.BigInteger(), nullable=True),
    sa.Column('dedup_key', sa.String(length=200), nullable=True),
    sa.Column('message', sa.String(length=1000), nullable=False),
    sa.Column('evidence', sa.JSON(), nullable=False),
    sa.Column('opened_ms', sa.BigInteger(), nullable=False),
    sa.Column('closed_ms', sa.BigInteger(), nullable=True),
    sa.Column('closed_reason', sa.String(length=200), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_findings')),
    sa.UniqueConstraint('dedup_key', name=op.f('uq_findings_dedup_key'))
    )
    with op.batch_alter_table('findings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_findings_code_opened_ms'), ['code', 'opened_ms'], unique=False)
        batch_op.create_index(batch_op.f('ix_findings_device_id_code_closed_ms'), ['device_id', 'code', 'closed_ms'], unique=False)

    op.create_table('officers',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('unit', sa.String(length=200), nullable=False),
    sa.Column('cert_number', sa.String(length=64), nullable=False),
    sa.Column('cert_expires_ms', sa.BigInteger(), nullable=False),
    sa.Column('created_ms', sa.BigInteger(), nullable=False),
    sa.Column('updated_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_officers')),
    sa.UniqueConstraint('cert_number', name=op.f('uq_officers_cert_number'))
    )
    op.create_table('request_nonces',
    sa.Column('device_id', sa.String(length=24), nullable=False),
    sa.Column('nonce', sa.String(length=64), nullable=False),
    sa.Column('time_ms', sa.BigInteger(), nullable=False),
    sa.Column('seen_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('device_id', 'nonce', name=op.f('pk_request_nonces'))
    )
    with op.batch_alter_table('request_nonces', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_request_nonces_seen_ms'), ['seen_ms'], unique=False)

    op.create_table('server_keys',
    sa.Column('key_id', sa.String(length=16), nullable=False),
    sa.Column('alg', sa.String(length=16), nullable=False),
    sa.Column('public_key', sa.LargeBinary(), nullable=False),
    sa.Column('created_ms', sa.BigInteger(), nullable=False),
    sa.Column('retired_ms', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('key_id', name=op.f('pk_server_keys'))
    )
    op.create_table('users',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=32), nullable=False),
    sa.Column('created_ms', sa.BigInteger(), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=True),
    sa.Column('disabled_ms', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('name', name=op.f('uq_users_name'))
    )
    op.create_table('api_tokens',
    sa.Column('id', sa.String(length=16), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('label', sa.String(length=200), nullable=True),
    sa.Column('created_ms', sa.BigInteger(), nullable=False),
    sa.Column('expires_ms', sa.BigInteger(), nullable=True),
    sa.Column('revoked_ms', sa.BigInteger(), nullable=True),
    sa.Column('last_used_ms', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_api_tokens_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_tokens_token_hash'))
    )
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_tokens_user_id'), ['user_id'], unique=False)

    op.create_table('devices',
    sa.Column('id', sa.String(length=24), nullable=False),
    sa.Column('serial', sa.String(length=64), nullable=False),
    sa.Column('model', sa.String(length=64), nullable=False),
    sa.Column('firmware', sa.String(length=64), nullable=False),
    sa.Column('key_id', sa.String(length=16), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('enrolled_ms', sa.BigInteger(), nullable=False),
    sa.Column('enrollment_token_id', sa.String(length=16), nullable=True),
    sa.Column('certificate', sa.LargeBinary(), nullable=False),
    sa.Column('last_seen_ms', sa.BigInteger(), nullable=True),
    sa.Column('highest_seq', sa.BigInteger(), nullable=True),
    sa.Column('receipted_seq', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['enrollment_token_id'], ['enrollment_tokens.id'], name=op.f('fk_devices_enrollment_token_id_enrollment_tokens')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_devices'))
    )
    op.create_table('assignments',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('device_id', sa.String(length=24), nullable=False),
    sa.Column('officer_id', sa.String(length=64), nullable=False),
    sa.Column('from_ms', sa.BigInteger(), nullable=False),
    sa.Column('until_ms', sa.BigInteger(), nullable=True),
    sa.Column('created_ms', sa.BigInteger(), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_assignments_device_id_devices')),
    sa.ForeignKeyConstraint(['officer_id'], ['officers.id'], name=op.f('fk_assignments_officer_id_officers')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_assignments'))
    )
    with op.batch_alter_table('assignments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_assignments_device_id_from_ms'), ['device_id', 'from_ms'], unique=False)
        batch_op.create_index(batch_op.f('ix_assignments_officer_id'), ['officer_id'], unique=False)

    op.create_table('conflicts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('device_id', sa.String(length=24), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('envelope', sa.LargeBinary(), nullable=False),
    sa.Column('entry_hash', sa.String(length=64), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('received_ms', sa.BigInteger(), nullable=False),
    sa.Column('evidence_key', sa.String(length=256), nullable=True),
    sa.Column('evidence_stored_ms', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_conflicts_device_id_devices')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_conflicts')),
    sa.UniqueConstraint('entry_hash', name=op.f('uq_conflicts_entry_hash'))
    )
    with op.batch_alter_table('conflicts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_conflicts_device_id_seq'), ['device_id', 'seq'], unique=False)

    op.create_table('device_keys',
    sa.Column('device_id', sa.String(length=24), nullable=False),
    sa.Column('key_id', sa.String(length=16), nullable=False),
    sa.Column('alg', sa.String(length=16), nullable=False),
    sa.Column('public_key', sa.LargeBinary(), nullable=False),
    sa.Column('created_ms', sa.BigInteger(), nullable=False),
    sa.Column('retired_ms', sa.BigInteger(), nullable=True),
    sa.Column('retired_after_seq', sa.BigInteger(), nullable=True),
    sa.Column('rotation', sa.LargeBinary(), nullable=True),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_device_keys_device_id_devices')),
    sa.PrimaryKeyConstraint('device_id', 'key_id', name=op.f('pk_device_keys'))
    )
    op.create_table('device_states',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('device_id', sa.String(length=24), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('cutoff_seq', sa.BigInteger(), nullable=True),
    sa.Column('changed_ms', sa.BigInteger(), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.String(length=500), nullable=True),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_device_states_device_id_devices')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_device_states'))
    )
    with op.batch_alter_table('device_states', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_device_states_device_id'), ['device_id'], unique=False)

    op.create_table('entries',
    sa.Column('device_id', sa.String(length=24), nullable=False),
    sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('payload_type', sa.String(length=64), nullable=False),
    sa.Column('envelope', sa.LargeBinary(), nullable=False),
    sa.Column('entry_hash', sa.String(length=64), nullable=False),
    sa.Column('prev', sa.String(length=64), nullable=False),
    sa.Column('key_id', sa.String(length=16), nullable=False),
    sa.Column('recording_id', sa.String(length=64), nullable=False),
    sa.Column('event', sa.String(length=16), nullable=True),
    sa.Column('officer_id', sa.String(length=64), nullable=True),
    sa.Column('case_step', sa.String(length=64), nullable=True),
    sa.Column('time_ms', sa.BigInteger(), nullable=False),
    sa.Column('duration_ms', sa.Integer(), nullable=True),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('size', sa.BigInteger(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('trusted', sa.Boolean(), nullable=False),
    sa.Column('source', sa.String(length=8), nullable=False),
    sa.Column('received_ms', sa.BigInteger(), nullable=False),
    sa.Column('object_key', sa.String(length=256), nullable=True),
    sa.Column('uploaded_ms', sa.BigInteger(), nullable=True),
    sa.Column('verified_ms', sa.BigInteger(), nullable=True),
    sa.Column('stored_sha256', sa.String(length=64), nullable=True),
    sa.Column('receipt', sa.LargeBinary(), nullable=True),
    sa.Column('verification', sa.JSON(), nullable=True),
    sa.Column('decode', sa.String(length=16), nullable=True),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_entries_device_id_devices')),
    sa.PrimaryKeyConstraint('device_id', 'seq', name=op.f('pk_entries')),
    sa.UniqueConstraint('entry_hash', name=op.f('uq_entries_entry_hash'))
    )
    with op.batch_alter_table('entries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_entries_case_step'), ['case_step'], unique=False)
        batch_op.create_index(batch_op.f('ix_entries_device_id_recording_id'), ['device_id', 'recording_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_entries_officer_id'), ['officer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_entries_state_received_ms'), ['state', 'received_ms'], unique=False)
        batch_op.create_index(batch_op.f('ix_entries_time_ms'), ['time_ms'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('entries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_entries_time_ms'))
        batch_op.drop_index(batch_op.f('ix_entries_state_received_ms'))
        batch_op.drop_index(batch_op.f('ix_entries_officer_id'))
        batch_op.drop_index(batch_op.f('ix_entries_device_id_recording_id'))
        batch_op.drop_index(batch_op.f('ix_entries_case_step'))

    op.drop_table('entries')
    with op.batch_alter_table('device_states', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_device_states_device_id'))

    op.drop_table('device_states')
    op.drop_table('device_keys')
    with op.batch_alter_table('conflicts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_conflicts_device_id_seq'))

    op.drop_table('conflicts')
    with op.batch_alter_table('assignments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_assignments_officer_id'))
        batch_op.drop_index(batch_op.f('ix_assignments_device_id_from_ms'))

    op.drop_table('assignments')
    op.drop_table('devices')
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_tokens_user_id'))

    op.drop_table('api_tokens')
    op.drop_table('users')
    op.drop_table('server_keys')
    with op.batch_alter_table('request_nonces', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_request_nonces_seen_ms'))

    op.drop_table('request_nonces')
    op.drop_table('officers')
    with op.batch_alter_table('findings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_findings_device_id_code_closed_ms'))
        batch_op.drop_index(batch_op.f('ix_findings_code_opened_ms'))

    op.drop_table('findings')
    op.drop_table('enrollment_tokens')
