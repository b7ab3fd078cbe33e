"""The benchmark suite of itlin: ``python -m bench`` (from the repository root) runs every benchmark
and writes ``bench/results/<device>.json``; ``python -m bench --help`` lists them.

Every benchmark measures what the pipeline runs (``itlin.train.Trainer``, ``itlin.ntk``, the
Snakefile), timing the things it compares alternately in one process so that a shared machine
loads them alike.
"""
