"""The three modalities, in the one order every stage uses (feature-file groups, batch columns, network
subsets). A neutral module: the feature file, extraction and the model all import it, none of them each other
for it."""

MODALITIES = ("text", "audio", "vision")
