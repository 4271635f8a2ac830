"""The thin bpy side: mesh exchange, worker jobs, operators, properties, panel, preferences."""
