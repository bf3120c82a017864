"""The pipeline's custom TFX components (installed as ``cmml.components``), one package each in the
TFX manner (``component.py``: spec and component; ``executor.py``; helpers split by job):

* ``example_gen/`` — :class:`LogExampleGen`: logs -> joined raw tf.Examples, dead letters, row counts;
* ``validation/`` — StatisticsGen + ImportSchemaGen + ExampleValidator + :class:`ValidationGate`;
* ``transform`` — the stock Transform component running :mod:`cmml.models.preprocessing`;
* ``task_gen/`` — :class:`TaskGen`: transformed interactions -> per-task TFRecords (Beam);
* ``trainer`` — ``run_fn`` of the stock Trainer (a caller of :mod:`cmml.models.training`);
* ``evaluator/`` — :class:`TaskEvaluator`: per-task metrics on meta-test tasks, blessing;
* ``serving_validator/`` — :class:`ServingValidator`: the exported model served in a fresh process;
* ``common`` — Beam options, stable hashing and file helpers the data components share.

Importing this package does not pull in TFX or TensorFlow; import the modules you need.
"""
