"""The comparison of plug-ins against the baseline (compare.py): runs and their files (runs), the records of runs and models (results), statistics
(stats), AP by object size (sizes), latency, memory, deployed latency (deploy), plug-in share, routing figures
(routing), the report, its tables and charts."""
