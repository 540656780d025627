"""Live views: one row per viewer of a live session, with start, end and the access event.

Revision ID: b4e07c1d9a55
Revises: c7a3e91f4d02
Create Date: 2026-11-23
"""
from alembic import op
import sqlalchemy as sa


revision = 'b4e07c1d9a55'
down_revision = 'c7a3e91f4d02'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('live_views',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('session_id', sa.String(length=64), nullable=False),
    sa.Column('device_id', sa.String(length=24), nullable=False),
    sa.Column('actor', sa.String(length=100), nullable=False),
    sa.Column('access_id', sa.BigInteger(), nullable=False),
    sa.Column('started_ms', sa.BigInteger(), nullable=False),
    sa.Column('ended_ms', sa.BigInteger(), nullable=True),
    sa.Column('end_reason', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_live_views_device_id_devices')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_live_views'))
    )
    op.create_index(op.f('ix_live_views_access_id'), 'live_views', ['access_id'], unique=False)
    op.create_index(op.f('ix_live_views_device_id_started_ms'), 'live_views', ['device_id', 'started_ms'],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_live_views_device_id_started_ms'), table_name='live_views')
    op.drop_index(op.f('ix_live_views_access_id'), table_name='live_views')
    op.drop_table('live_views')
