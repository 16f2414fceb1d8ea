"""The read side: the migrations that build the read model (views and projections) and the queries over it."""
