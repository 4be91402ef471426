"""Helpers shared by the tests, as Optuna has `optuna/testing/`: test modules import these, never each other.

datasets: miniature datasets in the official on-disk formats; spaces: the search spaces the tests run on and
`write_space`; studies: running a search and reading what it leaves; training: a tiny network and data for the
trainer, and a trial trained again from its record; hostile: files an adversary or a failing disk leaves behind;
specs: seeded random ArchSpecs over every option; fx_memory: peak activations measured on a torch.fx graph;
layers: the import contracts of pyproject.toml and `lint-imports` run on a copy of the tree; errors: the one check
that bad input is exit status 2 and one `error:` line; processes: the environment of a child `python -m search`.
"""
