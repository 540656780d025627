"""MQTT control plane: device broker credentials (hashed), device health from signed statuses and
availability (the fleet view), and signed commands with their acknowledgements.

Revision ID: sync0001
Revises: 0002_cases
Create Date: 2026-11-23 00:27:28.138506
"""
from alembic import op
import sqlalchemy as sa


revision = 'sync0001'
down_revision = '0002_cases'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('commands',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('device_id', sa.String(length=24), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('issued_ms', sa.BigInteger(), nullable=False),
    sa.Column('expires_ms', sa.BigInteger(), nullable=False),
    sa.Column('nonce', sa.String(length=64), nullable=False),
    sa.Column('envelope', sa.LargeBinary(), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('published_ms', sa.BigInteger(), nullable=True),
    sa.Column('publish_count', sa.Integer(), nullable=False),
    sa.Column('ack_status', sa.String(length=16), nullable=True),
    sa.Column('ack_reason', sa.String(length=300), nullable=True),
    sa.Column('ack_result', sa.JSON(), nullable=True),
    sa.Column('ack_time_ms', sa.BigInteger(), nullable=True),
    sa.Column('ack_received_ms', sa.BigInteger(), nullable=True),
    sa.Column('ack', sa.LargeBinary(), nullable=True),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_commands_device_id_devices')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_commands')),
    sa.UniqueConstraint('nonce', name=op.f('uq_commands_nonce'))
    )
    with op.batch_alter_table('commands', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_commands_device_id_issued_ms'), ['device_id', 'issued_ms'], unique=False)

    op.create_table('device_broker_credentials',
    sa.Column('device_id', sa.String(length=24), nullable=False),
    sa.Column('password_hash', sa.String(length=200), nullable=False),
    sa.Column('issued_ms', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_device_broker_credentials_device_id_devices')),
    sa.PrimaryKeyConstraint('device_id', name=op.f('pk_device_broker_credentials'))
    )
    op.create_table('device_health',
    sa.Column('device_id', sa.String(length=24), nullable=False),
    sa.Column('online', sa.Boolean(), nullable=True),
    sa.Column('availability_ms', sa.BigInteger(), nullable=True),
    sa.Column('last_seen_ms', sa.BigInteger(), nullable=True),
    sa.Column('status_received_ms', sa.BigInteger(), nullable=True),
    sa.Column('status_time_ms', sa.BigInteger(), nullable=True),
    sa.Column('clock_skew_ms', sa.BigInteger(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=True),
    sa.Column('recording_id', sa.String(length=64), nullable=True),
    sa.Column('officer_id', sa.String(length=64), nullable=True),
    sa.Column('case_step', sa.String(length=64), nullable=True),
    sa.Column('battery_pct', sa.Integer(), nullable=True),
    sa.Column('storage_free', sa.BigInteger(), nullable=True),
    sa.Column('buffered_chunks', sa.BigInteger(), nullable=True),
    sa.Column('buffered_bytes', sa.BigInteger(), nullable=True),
    sa.Column('firmware', sa.String(length=64), nullable=True),
    sa.Column('config_version', sa.String(length=64), nullable=True),
    sa.Column('reported_seq', sa.BigInteger(), nullable=True),
    sa.Column('reported_head', sa.String(length=64), nullable=True),
    sa.Column('checkpoint', sa.JSON(), nullable=True),
    sa.Column('alarms', sa.JSON(), nullable=True),
    sa.Column('status', sa.LargeBinary(), nullable=True),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_device_health_device_id_devices')),
    sa.PrimaryKeyConstraint('device_id', name=op.f('pk_device_health'))
    )


def downgrade() -> None:
    op.drop_table('device_health')
    op.drop_table('device_broker_credentials')
    with op.batch_alter_table('commands', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_commands_device_id_issued_ms'))

    op.drop_table('commands')
