"""The on-disk formats of the datasets that the environment commands build (MinAtar episodes,
BabyAI demonstrations): those commands write them through these modules and the data sources
read them, so loading a dataset never imports an environment."""
