"""Training experiments that compare sheaf training with gradient descent.

``examples/run_training_experiments.py`` is the entry point. The modules here
hold the settings (:mod:`training.settings`), the independent runs and the
process pool (:mod:`training.tasks`), the four experiments
(:mod:`training.experiments`), the figures (:mod:`training.figures`) and the
Markdown report (:mod:`training.report`).
"""
