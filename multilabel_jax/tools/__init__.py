"""Tools around the library that are neither part of it nor tests: ``soak`` (a reliability
soak of the train CLI, ``python -m multilabel_jax.tools.soak``)."""
