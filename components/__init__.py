"""Custom TFX components and their building blocks (installed as ``cmml.components``).

Data components (issue #4), one module each:

* ``example_gen`` — :class:`LogExampleGen`: logs -> joined tf.Examples, dead letters, row counts;
* ``validation`` — StatisticsGen + ImportSchemaGen + ExampleValidator + :class:`ValidationGate`;
* ``transform_module`` — the tf.Transform ``preprocessing_fn`` (vocabularies, OOV buckets);
* ``task_gen`` — :class:`TaskGen`: transformed interactions -> per-task TFRecords (Beam);
  its vectorised core is ``task_logic``;
* ``episodes_data`` — tf.data builders from task records to the episode tensors of
  ``schemas/episodes.md``.

Modules are imported on demand (``from cmml.components.task_gen import TaskGen``): importing
this package does not pull in TFX or TensorFlow.
"""
