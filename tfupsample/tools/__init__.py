"""The programs behind the `tfupsample` command (verify, bench, demo, the training example).

Not part of the library: they use it as any user would, and need extras the library does not
(scikit-image, matplotlib; `tfupsample.tools.cli.NEEDS` says which).
"""
