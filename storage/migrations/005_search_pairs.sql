-- Adjacent pairs of common words, for two-word phrases (storage.search_pairs). FTS5 answers "learning different"
-- by decoding the position lists of both words, and for two words each in a third of the papers that is 2-4 ms
-- at 100k papers whatever the LIMIT; one token per pair is a doclist like any rare word's (0.15 ms, measured).
-- Only pairs of head words (search_pairs_heads, chosen when the index is built) are indexed: a phrase with a
-- rarer word is quick in FTS5 already. Contentless (it holds tokens only, no copy of the text) and detail=none
-- (a pair token is the whole phrase: no positions needed). Derived data: `paperboy reindex` rebuilds it.
CREATE VIRTUAL TABLE search_pairs USING fts5(pairs, content='', detail=none, tokenize="ascii tokenchars '_'");
CREATE TABLE search_pairs_heads (term TEXT PRIMARY KEY) WITHOUT ROWID;

-- Papers whose pairs are not in step with their row: marked by triggers in the same transaction as the paper,
-- so a crash cannot lose one. An update or a delete keeps the indexed text (the first one only, which is what the
-- index holds): a contentless FTS5 table removes a row's tokens only when given them again.
CREATE TABLE search_pairs_dirty (
    id INTEGER PRIMARY KEY,
    indexed INTEGER NOT NULL,  -- 1: the row's old text is in the index (if id >= the low mark, meta below)
    title TEXT,
    abstract TEXT,
    authors TEXT
);
CREATE TRIGGER papers_pairs_ai AFTER INSERT ON papers BEGIN
    INSERT OR IGNORE INTO search_pairs_dirty(id, indexed) VALUES (new.id, 0);
END;
CREATE TRIGGER papers_pairs_au AFTER UPDATE OF title, abstract, authors ON papers BEGIN
    INSERT OR IGNORE INTO search_pairs_dirty(id, indexed, title, abstract, authors)
    VALUES (old.id, 1, old.title, old.abstract, old.authors);
END;
CREATE TRIGGER papers_pairs_ad AFTER DELETE ON papers BEGIN
    INSERT OR IGNORE INTO search_pairs_dirty(id, indexed, title, abstract, authors)
    VALUES (old.id, 1, old.title, old.abstract, old.authors);
END;

-- Every paper from this id up has its pairs indexed (once its dirty mark is folded). No heads yet: nothing is.
INSERT OR REPLACE INTO meta(key, value) VALUES ('search_pairs_low', (SELECT coalesce(max(id), 0) + 1 FROM papers));
