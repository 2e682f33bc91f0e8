-- The newest paper id that has each term, an upper bound (NULL: not known yet, read as "any paper"). A prefix
-- that expands to hundreds of terms pays FTS5's set-up for every one of them, though only a few occur among
-- the newest papers; with `last`, search first asks for the terms at or above a recent id and widens only if
-- that finds too few papers. Derived data like the rest of search_vocab: the fold of search_vocab_dirty
-- raises it in the same transaction as it clears the dirty mark, so it never falls below a stored paper's id.
ALTER TABLE search_vocab ADD COLUMN last INTEGER;
