"""Plans: for each store operation, the statements it sends (built once per shape), their
parameters, and how to turn the rows that come back into the operation's result. Pure: no
module here touches a connection, imports a runner or the store."""
