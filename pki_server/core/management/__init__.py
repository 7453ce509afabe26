"""Management commands of the CA core; ``base`` holds what they share."""
