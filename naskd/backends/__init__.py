"""Adapters that run ``naskd.trial.evaluate`` under a search framework; the only place that imports one."""
