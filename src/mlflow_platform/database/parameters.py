"""PostgreSQL parameters the stack puts in the RDS parameter group beyond RDS's own defaults.
RDS already sizes shared_buffers (25% of memory), effective_cache_size (75%) and
max_connections by formula from the instance class; what it leaves at PostgreSQL's defaults, and
what ``benchmarks/data_scale.py`` measured to matter for MLflow's queries at a million runs, is
here. The benchmark applies the very same values to its local PostgreSQL.

work_mem stays at PostgreSQL's 4 MB: MLflow's searches sort at most a page of runs once the
platform's indexes deliver them in order, and a share of memory per connection (RDS allows about
one connection per 9.5 MB) comes out below 4 MB on every class up to 64 GiB anyway.
"""

from __future__ import annotations


def tuned_parameters() -> dict[str, str]:
    """Parameter name -> value, in RDS's spelling (jit and track_io_timing take 0/1).

    - random_page_cost 1.1: gp3 is SSD, a random read costs about what a sequential one does; at
      PostgreSQL's 4.0 the planner prefers sorting a whole experiment over walking an index.
    - jit off: MLflow's searches are short OLTP queries whose estimated cost at a million runs
      crosses jit_above_cost, and compiling then takes longer than the query.
    - track_io_timing on: `db report` and slow-query logs show time spent reading.
    """
    return {"random_page_cost": "1.1", "jit": "0", "track_io_timing": "1"}
