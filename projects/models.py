"""Mirror models of epilot entities and the Ausbau projects built from them."""
