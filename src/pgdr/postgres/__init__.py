"""PostgreSQL: binaries, the managed cluster, connections and SQL builders."""
