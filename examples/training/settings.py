"""Settings of the full and the quick run, and the numbers the authors recorded."""

from __future__ import annotations

from dataclasses import dataclass

EXPERIMENTS = ("configurations", "learning_rate_law", "depth", "digits")
"""Names accepted by ``--only``, in the order the report lists them."""

SYNTHETIC_DATASETS = ("paraboloid", "saddle", "circular", "blobs")
"""Data sets of the configuration experiment, all with two input features."""

REGRESSION_DATASETS = ("paraboloid", "saddle")

GD_LEARNING_RATE = {"regression": 0.005, "classification": 0.01}
"""Full-batch gradient-descent learning rates of the baseline recipe."""

HIDDEN_WIDTH = 30
"""Width of every hidden layer of the synthetic experiments."""

DIGITS_WIDTHS = (64, 32, 10)

# The numbers recorded by the paper's authors (arXiv:2603.14831) for the
# paraboloid [2, 30, 1] with beta * n_train = 1, dt = 0.005 and 100k steps.
RECORDED_SHEAF_TRAIN_MSE = 0.063
RECORDED_SHEAF_TEST_MSE = 0.087
RECORDED_GD_TRAIN_MSE = 0.0033
RECORDED_SHEAF_CHECKPOINTS = {1_000: 1.89, 10_000: 0.53, 20_000: 0.23, 50_000: 0.084}
"""Recorded sheaf training loss after the given number of joint steps."""
RECORDED_REGRESSION_RATIO = (3.0, 16.0)
"""Recorded range of sheaf over gradient-descent regression loss."""
RECORDED_ACCURACY = (0.93, 1.0)
"""Recorded range of classification accuracy of both methods."""
RECORDED_STAGNATION_BELOW = 0.3
RECORDED_BEST_RANGE = (0.3, 10.0)
RECORDED_OPTIMUM = (1.0, 2.0)
RECORDED_DIVERGENCE_ABOVE = 10.0
RECORDED_LAMBDA_MIN_INIT = 0.19
RECORDED_LAMBDA_MAX_INIT = 3.6
RECORDED_LAMBDA_MIN_TRAINED = 0.03
RECORDED_LAMBDA_MAX_TRAINED = 20.0
"""Recorded extreme eigenvalues of the free Laplacian of the paraboloid
[2, 30, 1] before and after training."""

POINT_TOLERANCE = 1.5
"""A measured value agrees with a recorded one when their ratio is within this
factor either way."""

REGIME_FACTOR = 2.0
"""A learning rate belongs to the best regime when its mean test loss is within
this factor of the lowest mean test loss of the grid."""


@dataclass(frozen=True)
class Settings:
    """Sizes of one run of every experiment.

    ``epochs`` times ``steps_per_epoch`` joint steps of sheaf training, and
    ``gd_steps`` full-batch gradient steps, apply to the configuration,
    learning-rate and depth experiments. ``seeds`` serve the learning-rate
    law, the depth experiment and the paraboloid [2, 30, 1] configuration,
    whose numbers were recorded. The other configurations use
    ``configuration_seeds``. Every depth trains up to the integration time
    ``depth_max_time``. The ``digits_*`` fields size the digits experiment.
    """

    quick: bool
    seeds: tuple[int, ...]
    configuration_seeds: tuple[int, ...]
    epochs: int
    steps_per_epoch: int
    gd_steps: int
    log_every: int
    beta_n_grid: tuple[float, ...]
    depths: tuple[int, ...]
    depth_max_time: float
    depth_times: tuple[float, ...]
    spectrum_inputs: int
    final_spectrum_inputs: int
    digits_epochs: int
    digits_steps_per_epoch: int
    digits_gd_steps: int
    digits_seed: int
    gd_record_every: int

    @property
    def total_steps(self) -> int:
        """Joint steps of one sheaf training run."""
        return self.epochs * self.steps_per_epoch

    @property
    def step_scale(self) -> float:
        """Ratio of ``total_steps`` to the 100k steps of the recorded runs."""
        return self.total_steps / 100_000


# With 2 workers on a 2-core machine, the full run took 6 minutes when the
# machine was otherwise idle, 11.5 minutes at a load average of 4 to 8 and 23
# to 25 minutes at a load average of about 10. To stay near 25 minutes under such
# load, the configurations without recorded numbers use one seed, the rate grid
# has 9 points, deeper networks stop at T = 500 and the digits runs take 50k
# steps.
FULL = Settings(
    quick=False,
    seeds=(0, 1, 2),
    configuration_seeds=(0,),
    epochs=100,
    steps_per_epoch=1000,
    # 100k gradient steps reach the recorded GD loss of about 0.0033 on the
    # paraboloid, and match the number of joint sheaf steps.
    gd_steps=100_000,
    log_every=100,
    beta_n_grid=(0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0),
    depths=(1, 2, 3),
    # The time that the one-hidden-layer network reaches: 100k steps of dt 0.005.
    depth_max_time=500.0,
    depth_times=(1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0),
    spectrum_inputs=300,
    final_spectrum_inputs=50,
    digits_epochs=50,
    digits_steps_per_epoch=1000,
    digits_gd_steps=50_000,
    digits_seed=0,
    gd_record_every=1000,
)

QUICK = Settings(
    quick=True,
    seeds=(0,),
    configuration_seeds=(0,),
    epochs=2,
    steps_per_epoch=100,
    gd_steps=200,
    log_every=20,
    beta_n_grid=(0.1, 1.0, 30.0),
    depths=(1, 2),
    depth_max_time=1.0,
    depth_times=(0.1, 0.5, 1.0),
    spectrum_inputs=10,
    final_spectrum_inputs=5,
    digits_epochs=1,
    digits_steps_per_epoch=100,
    digits_gd_steps=100,
    digits_seed=0,
    gd_record_every=20,
)
