"""``python -m polymodal``: the same CLI, so ``accelerate launch -m polymodal train ...`` works."""

from polymodal.cli.main import main

main()
