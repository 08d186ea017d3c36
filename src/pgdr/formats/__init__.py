"""Backup formats, one module each behind one protocol (base.BackupFormat), chosen in choice.py: plain (one
pg_dumpall script), split (globals + one pg_dump -Fc archive per database). Actions never branch on the format."""
