"""The model core: verify and load the trained artifacts, turn columns into inputs, score."""
from .artifacts import ArtifactError
from .pipeline import InputPlan, Model, Scores, load_model
