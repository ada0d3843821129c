"""Deep Q-learning: the slides' serial algorithm box (ε-greedy, targets, gradient), the one experience loop,
the serial trainer, evaluation and play."""
