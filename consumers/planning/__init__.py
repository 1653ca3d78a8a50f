"""The planning consumer: turns a build into a release through its service's pipeline.

Its configuration side lives here as pure modules: ``pipeline`` (the YAML models),
``strategy`` (which strategy an environment gets, and its concrete steps),
``values`` (the per-environment values overlay, secrets only as references),
``calendar`` (deploy windows and freezes) and ``loader`` (a config directory,
with file / line / field for every error).
"""
