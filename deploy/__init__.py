"""How the product is run, outside the deployable code: ``deploy/local`` is the one-machine setup
that ``make run`` starts and the private services ``make test`` runs against."""
