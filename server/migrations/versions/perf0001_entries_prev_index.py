"""Index entries by (device_id, prev): the fork check run at every announce.

Revision ID: perf0001
Revises: gov0001
"""
from alembic import op


revision = 'perf0001'
down_revision = 'gov0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('entries') as batch:
        batch.create_index(batch.f('ix_entries_device_id_prev'), ['device_id', 'prev'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('entries') as batch:
        batch.drop_index(batch.f('ix_entries_device_id_prev'))
