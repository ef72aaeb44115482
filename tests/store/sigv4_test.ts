/**
 * SigV4 signing (`src/store/s3/sigv4.ts`) against the examples of AWS's "Signature Calculations for the Authorization
 * Header" page for S3: GET Object with a Range, PUT Object, GET Bucket Lifecycle and GET Bucket (List Objects).
 */
import assert from "node:assert/strict";
import {
  canonicalQuery,
  canonicalUri,
  EMPTY_SHA256,
  sha256Hex,
  SigV4Signer,
  uriEncode,
} from "../../src/store/s3/sigv4.ts";

const EXAMPLE = { accessKeyId: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY" };
const DATE = new Date("2013-05-24T00:00:00Z");
const HOST = "https://examplebucket.s3.amazonaws.com";
const signer = new SigV4Signer(EXAMPLE, "us-east-1");
const signatureOf = (headers: Record<string, string>) => headers.authorization.split("Signature=")[1];

Deno.test("sigv4: the documented GET Object example with a Range header", async () => {
  const headers = await signer.sign({
    method: "GET",
    url: new URL(`${HOST}/test.txt`),
    headers: { Range: "bytes=0-9" },
    payloadHash: EMPTY_SHA256,
    date: DATE,
  });
  assert.equal(
    headers.authorization,
    "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request," +
      "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date," +
      "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
  );
  assert.equal(headers["x-amz-date"], "20130524T000000Z");
  assert.equal(headers["x-amz-content-sha256"], EMPTY_SHA256);
  assert.equal(headers.host, "examplebucket.s3.amazonaws.com");
  assert.equal(headers["x-amz-security-token"], undefined);
});

Deno.test("sigv4: the documented PUT Object example (a `$` in the key, a signed payload)", async () => {
  const payloadHash = await sha256Hex("Welcome to Amazon S3.");
  assert.equal(payloadHash, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
  const headers = await signer.sign({
    method: "PUT",
    url: new URL(`${HOST}/test$file.text`),
    headers: { Date: "Fri, 24 May 2013 00:00:00 GMT", "x-amz-storage-class": "REDUCED_REDUNDANCY" },
    payloadHash,
    date: DATE,
  });
  assert.match(headers.authorization, /SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class,/);
  assert.equal(signatureOf(headers), "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
});

Deno.test("sigv4: the documented bucket examples (a bare query name, an unsorted query)", async () => {
  const lifecycle = await signer.sign({
    method: "GET",
    url: new URL(`${HOST}/?lifecycle`),
    payloadHash: EMPTY_SHA256,
    date: DATE,
  });
  assert.equal(signatureOf(lifecycle), "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
  const list = await signer.sign({
    method: "GET",
    url: new URL(`${HOST}/?prefix=J&max-keys=2`),
    payloadHash: EMPTY_SHA256,
    date: DATE,
  });
  assert.equal(signatureOf(list), "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
});

Deno.test("sigv4: a session token is sent and signed; another day derives another key", async () => {
  const withToken = new SigV4Signer({ ...EXAMPLE, sessionToken: "token/with+odd=chars" }, "us-east-1");
  const headers = await withToken.sign({
    method: "GET",
    url: new URL(`${HOST}/test.txt`),
    payloadHash: EMPTY_SHA256,
    date: DATE,
  });
  assert.equal(headers["x-amz-security-token"], "token/with+odd=chars");
  assert.match(headers.authorization, /SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token,/);
  const later = await withToken.sign({
    method: "GET",
    url: new URL(`${HOST}/test.txt`),
    payloadHash: EMPTY_SHA256,
    date: new Date("2013-05-25T00:00:00Z"),
  });
  assert.match(later.authorization, /Credential=AKIAIOSFODNN7EXAMPLE\/20130525\/us-east-1\/s3\/aws4_request/);
  assert.notEqual(signatureOf(later), signatureOf(headers));
});

Deno.test("sigv4: encoding keeps only unreserved characters; the query is sorted and encoded once", () => {
  assert.equal(uriEncode("a-b_c.d~e"), "a-b_c.d~e");
  assert.equal(uriEncode("a b/c+d=é"), "a%20b%2Fc%2Bd%3D%C3%A9");
  assert.equal(uriEncode("x/y z", true), "x/y%20z");
  assert.equal(canonicalUri(new URL("http://h/b/a%3Db/c+d")), "/b/a%3Db/c%2Bd");
  assert.equal(canonicalUri(new URL("http://h/b/%E2%82%AC")), "/b/%E2%82%AC");
  assert.equal(
    canonicalQuery(new URL("http://h/?prefix=a%2Fb&list-type=2&uploads")),
    "list-type=2&prefix=a%2Fb&uploads=",
  );
  assert.equal(canonicalQuery(new URL("http://h/")), "");
});
