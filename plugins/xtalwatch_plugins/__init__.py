"""xtalwatch's built-in plugins, registered through the ``xtalwatch.plugins`` entry-point group.

A lab adds its own the same way (an installed package with that entry-point group), or by
dropping a ``*.py`` file with a module-level ``PLUGINS = [MyAdapter]`` list into a folder named
in ``plugins.dirs``.
"""
