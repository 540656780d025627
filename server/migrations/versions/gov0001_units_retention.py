"""Governance: units (bureau > section > team) with unit ids on users, officers, devices and cases;
legal holds; what each footage object's retention was last set to, and which objects expired.

Revision ID: gov0001
Revises: b4e07c1d9a55
"""
from alembic import op
import sqlalchemy as sa


revision = 'gov0001'
down_revision = 'b4e07c1d9a55'
branch_labels = None
depends_on = None

_UNIT_TABLES = ('users', 'officers', 'devices', 'cases')


def upgrade() -> None:
    op.create_table('units',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('parent_id', sa.String(length=64), nullable=True),
    sa.Column('path', sa.String(length=1000), nullable=False),
    sa.Column('created_ms', sa.BigInteger(), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['parent_id'], ['units.id'], name=op.f('fk_units_parent_id_units')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_units')),
    sa.UniqueConstraint('path', name=op.f('uq_units_path'))
    )
    for table in _UNIT_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column('unit_id', sa.String(length=64), nullable=True))
            batch.create_foreign_key(op.f(f'fk_{table}_unit_id_units'), 'units', ['unit_id'], ['id'])
            if table != 'users':
                batch.create_index(op.f(f'ix_{table}_unit_id'), ['unit_id'])
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('scope_unit_id', sa.String(length=64), nullable=True))
        batch.create_foreign_key(op.f('fk_users_scope_unit_id_units'), 'units', ['scope_unit_id'], ['id'])
    op.create_table('legal_holds',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('target', sa.String(length=8), nullable=False),
    sa.Column('target_id', sa.String(length=100), nullable=False),
    sa.Column('reason', sa.String(length=500), nullable=False),
    sa.Column('set_ms', sa.BigInteger(), nullable=False),
    sa.Column('set_by', sa.String(length=64), nullable=False),
    sa.Column('lifted_ms', sa.BigInteger(), nullable=True),
    sa.Column('lifted_by', sa.String(length=64), nullable=True),
    sa.Column('lift_reason', sa.String(length=500), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_legal_holds'))
    )
    op.create_index(op.f('ix_legal_holds_target_target_id'), 'legal_holds', ['target', 'target_id'], unique=False)
    op.create_table('footage_retention',
    sa.Column('object_key', sa.String(length=300), nullable=False),
    sa.Column('retain_until_ms', sa.BigInteger(), nullable=True),
    sa.Column('indefinite', sa.Boolean(), nullable=False),
    sa.Column('removed_ms', sa.BigInteger(), nullable=True),
    sa.Column('removed_class', sa.String(length=16), nullable=True),
    sa.Column('removed_receipt', sa.LargeBinary(), nullable=True),
    sa.Column('log_index', sa.BigInteger(), nullable=True),
    sa.Column('updated_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('object_key', name=op.f('pk_footage_retention'))
    )


def downgrade() -> None:
    op.drop_table('footage_retention')
    op.drop_index(op.f('ix_legal_holds_target_target_id'), table_name='legal_holds')
    op.drop_table('legal_holds')
    with op.batch_alter_table('users') as batch:
        batch.drop_constraint(op.f('fk_users_scope_unit_id_units'), type_='foreignkey')
        batch.drop_column('scope_unit_id')
    for table in _UNIT_TABLES:
        with op.batch_alter_table(table) as batch:
            if table != 'users':
                batch.drop_index(op.f(f'ix_{table}_unit_id'))
            batch.drop_constraint(op.f(f'fk_{table}_unit_id_units'), type_='foreignkey')
            batch.drop_column('unit_id')
    op.drop_table('units')
