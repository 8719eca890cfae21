"""The commands users type: `ad-purchase serve|score|train|sample` (main.py, installed by
pip install -e .), and train.py and score.py at the repository root."""
