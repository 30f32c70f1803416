"""The benchmark suite: `python -m tools.bench [NAME ...] [--quick] [--json out.json]`.

One module per benchmark (`ring`, `chain`, `push_cpu`, `latency`, `restart`, `footprint`), each with
`run(settings) -> Result`; shared helpers in the `_`-prefixed modules.  BENCHMARKS.md explains the
method and holds the tables of a full run.  Importing this package imports nothing heavy (the fork
server imports `tools.bench._kinds` through it).
"""
