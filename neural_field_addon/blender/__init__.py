"""The thin bpy side: mesh exchange, where the worker runs, worker jobs and their driver, results
as objects, operators, properties, panel, preferences (docs/ARCHITECTURE.md)."""
