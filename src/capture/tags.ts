/**
 * Mailpit's tag rules (its tools.CleanTag and storage.SetMessageTags): characters outside
 * a-z A-Z 0-9 - _ . @ and space become a space, runs of blanks collapse, at most 100
 * characters; a message's tags are unique ignoring case (the first spelling wins). Pure.
 */
const INVALID = /[^a-zA-Z0-9\-\ _.@]/g;

export function cleanTag(tag: string): string {
  return tag.replace(INVALID, ' ').replace(/\s+/g, ' ').trim().slice(0, 100).trim();
}

/** The clean, non-empty tags of a list, without case-insensitive repeats, in order. */
export function tagList(tags: Iterable<string>): string[] {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const raw of tags) {
    const tag = cleanTag(raw);
    const key = tag.toLowerCase();
    if (tag === '' || seen.has(key)) continue;
    seen.add(key);
    out.push(tag);
  }
  return out;
}
