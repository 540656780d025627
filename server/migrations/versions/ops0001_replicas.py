"""Second copies of footage: one row per object verified in a second store (issue 10).

Revision ID: ops0001
Revises: sync0001
Create Date: 2026-11-23
"""
from alembic import op
import sqlalchemy as sa


revision = 'ops0001'
down_revision = 'sync0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('replicas',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('target', sa.String(length=300), nullable=False),
    sa.Column('device_id', sa.String(length=24), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('object_key', sa.String(length=256), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('verified_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_replicas')),
    sa.UniqueConstraint('target', 'object_key', name=op.f('uq_replicas_target_object_key'))
    )
    with op.batch_alter_table('replicas', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_replicas_target_device_id_seq'), ['target', 'device_id', 'seq'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('replicas', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_replicas_target_device_id_seq'))
    op.drop_table('replicas')
