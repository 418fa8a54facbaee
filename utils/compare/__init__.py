"""The comparison of plug-ins against the baseline (compare.py): runs and their files (runs), the records of runs and
models (results), statistics (stats), AP by object size (sizes), peak training memory (memory), the report, its
tables and charts. The deployed runtimes and latency timing are utils/deploy/; the plug-ins' share and BRA's
routing figures live beside the attention, in models/attention/."""
