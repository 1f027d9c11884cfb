"""Metrics for `w2sd eval`: reward models (PickScore, HPSv2.1, ImageReward, LAION aesthetic), image
statistics and analytic statistics, all registered through the ``register_metrics`` hook."""
