from maxent_lightning.cli import entry

entry()
