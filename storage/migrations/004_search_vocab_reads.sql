-- How FTS5 reads each term back as query text, worked out once when the term is stored instead of at every
-- first search that expands a prefix to it (600 terms for `sho*`: 1.5-2 ms of tokenising, measured). NULL: not
-- worked out yet (search then does it, in memory); '': the term reads as itself, as almost every stem does;
-- otherwise a JSON array [a word FTS5 reads as exactly the term or null, what FTS5 makes of the term or null]
-- (Porter is not idempotent on every stem). Derived data like the rest of search_vocab.
ALTER TABLE search_vocab ADD COLUMN reads TEXT;
