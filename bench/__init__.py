"""genie's benchmarks: `bench/run` runs them; each module in bench.__main__.REGISTRY joins."""
