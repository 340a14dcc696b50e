"""Chaos tests: the agent SIGKILLed under churn."""
