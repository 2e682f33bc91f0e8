-- Every term of the FTS5 index, for expanding prefix queries (`transform*`) into the exact terms they cover:
-- FTS5 answers a prefix by merging the doclists of all those terms over the whole table, which is what made
-- prefix search slow at millions of papers. Derived data: `paperboy reindex` rebuilds it from papers_fts.
CREATE TABLE search_vocab (term TEXT PRIMARY KEY) WITHOUT ROWID;

-- Papers whose terms may be missing from search_vocab. Written by triggers in the same transaction as the
-- paper itself, so a crash can never leave a paper's terms unaccounted for; search folds them in before
-- expanding a prefix. Extra terms in search_vocab are harmless (they expand to terms that match nothing).
CREATE TABLE search_vocab_dirty (id INTEGER PRIMARY KEY);
CREATE TRIGGER papers_vocab_ai AFTER INSERT ON papers BEGIN
    INSERT OR IGNORE INTO search_vocab_dirty(id) VALUES (new.id);
END;
CREATE TRIGGER papers_vocab_au AFTER UPDATE OF title, abstract, authors, cats ON papers BEGIN
    INSERT OR IGNORE INTO search_vocab_dirty(id) VALUES (new.id);
END;
INSERT INTO search_vocab_dirty(id) SELECT id FROM papers;
