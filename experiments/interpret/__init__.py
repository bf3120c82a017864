"""Interpretability studies (``cmml interpret``): t-SNE of CMML task contexts and Soft-M route heat maps.

Three figures, each from models trained here (through :func:`cmml.models.training.train`) on task
records made by the project's real data path (LogExampleGen → validation → Transform → TaskGen):

* ``tsne_user_contexts.png`` — synthetic users with planted latent preference groups: the context
  vector C of every meta-test user's support set, trained model against the same architecture
  untrained, coloured by group;
* ``tsne_scenario_contexts.png`` — MovieLens themes (``genre=…``, ``genre=…|decade=…``) in the
  scenario setting, coloured by the theme's genre;
* ``soft_routes.png`` — the Soft-M routing probabilities of two meta-test users of two groups.

Modules: :mod:`.config` (the study's models and data settings, from
``pipeline/configs/experiments/interpret.yaml``), :mod:`.records` (the data path), :mod:`.contexts`
(models, episodes with task keys, contexts and routes), :mod:`.statistics` (separation and route
distances), :mod:`.plots`, :mod:`.studies` (the three studies and the report ``interpret.json``).
"""
