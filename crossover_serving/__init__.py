"""What runs in Lambda and on instances: one prediction core (bytes in, labels out), thin adapters.

Never imports aws_cdk or crossover: this folder is the whole Lambda bundle and the instance bundle.
"""
