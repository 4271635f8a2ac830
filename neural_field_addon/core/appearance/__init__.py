"""The look of a surface: colour spaces, the colours of a source mesh (corner colours and image
textures through UVs) and texture images."""
