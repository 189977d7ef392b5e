"""A/B test statistics: pure-Python distributions, frequentist, Bayesian and sequential tests, SRM, power."""
