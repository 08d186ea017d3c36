"""The fidelity tier: dump, restore, dump again, diff, the way pg_upgrade's own test judges an upgrade. Real
clusters (fixture.sql, postgis.sql loaded into a source, restored into another), compared by
fidelity.fidelity_helpers; PostGIS tests need the system's postgis packages for each major.
"""
