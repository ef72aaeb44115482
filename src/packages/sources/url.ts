/**
 * `url:http(s)://.../package.json`: a package.json (or a single `.py`/`.mpy` module) at a plain URL. It has one
 * version only, `latest`, re-read after `cache.ttl`.
 * @module
 */
import { onlyLatest, singleModule, type SourceKind } from "./source.ts";

/** The `url:` kind. */
export const url: SourceKind = {
  name: "url",
  pattern: /^https?:\/\/[^\s/]+(\/\S*)?$/,
  example: "url:https://.../package.json",
  versioned: false,
  parse(rest) {
    if (!/^https?:\/\/[^/]+/.test(rest)) throw new Error(`expected url:http(s)://..., got url:${rest}`);
    return {
      kind: "url",
      text: `url:${rest}`,
      defaultRef: "latest",
      mutability: () => true,
      resolve(ctx, ref) {
        onlyLatest("url", ref);
        if (/\.(py|mpy)$/.test(rest)) return Promise.resolve(singleModule(ctx, rest, rest.split("/").pop()!, "HEAD"));
        return ctx.packageAt(rest, "HEAD");
      },
    };
  },
};
