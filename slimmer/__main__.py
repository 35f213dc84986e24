from slimmer.cli import run

run()
