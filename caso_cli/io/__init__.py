"""Reading and writing: images, files written safely, command inputs, labelled datasets, user paths, grids."""
