"""The comparison of plug-ins against the baseline (compare.py): runs and their records (runs), statistics
(stats), AP by object size (sizes), latency, memory, deployed latency (deploy), plug-in share, routing figures
(routing), the report and its charts."""
