import assert from "node:assert/strict";
import { MalformedDatagramError } from "../../lib/errors.ts";
import {
  decodeAddress,
  encodeAddress,
  formatAddress,
  isIPv4,
  isIPv6,
  isMulticastIPv4,
  parseAddress,
} from "../../lib/wire/address.ts";

const bytes = (...values: number[]) => new Uint8Array(values);

function test(name: string, fn: () => void): void {
  Deno.test({ name, permissions: "none", fn });
}

test("encodeAddress() writes IPv4 as 4 address bytes and a big-endian port", () => {
  assert.deepEqual(
    encodeAddress({ hostname: "127.0.0.1", port: 5007 }),
    bytes(127, 0, 0, 1, 0x13, 0x8f),
  );
  assert.deepEqual(
    encodeAddress({ hostname: "255.254.1.0", port: 0xfffe }),
    bytes(255, 254, 1, 0, 0xff, 0xfe),
  );
  assert.deepEqual(
    encodeAddress({ hostname: "0.0.0.0", port: 0 }),
    bytes(0, 0, 0, 0, 0, 0),
  );
});

test("encodeAddress() writes IPv6 as 16 address bytes and a big-endian port", () => {
  assert.deepEqual(
    encodeAddress({ hostname: "::1", port: 5007 }),
    bytes(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x13, 0x8f),
  );
  assert.deepEqual(
    encodeAddress({ hostname: "2001:DB8::a:0BCD", port: 443 }),
    bytes(
      0x20,
      0x01,
      0x0d,
      0xb8,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0x0a,
      0x0b,
      0xcd,
      0x01,
      0xbb,
    ),
  );
  assert.deepEqual(
    encodeAddress({ hostname: "::ffff:192.0.2.128", port: 1 }),
    bytes(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 128, 0, 1),
  );
});

test("encodeAddress() throws a TypeError on a hostname that is not a literal IP", () => {
  for (
    const hostname of [
      "localhost",
      "1.2.3",
      "[::1]",
      "fe80::1%eth0",
      "",
      "example.com",
    ]
  ) {
    assert.throws(
      () => encodeAddress({ hostname, port: 1 }),
      TypeError,
      hostname,
    );
  }
});

test("encodeAddress() throws a TypeError on a port outside 0..65535", () => {
  for (const port of [-1, 65536, 1.5, NaN]) {
    assert.throws(
      () => encodeAddress({ hostname: "1.2.3.4", port }),
      TypeError,
    );
  }
});

test("decodeAddress() reads a 6-byte IPv4 value", () => {
  assert.deepEqual(decodeAddress(bytes(127, 0, 0, 1, 0x13, 0x8f)), {
    hostname: "127.0.0.1",
    port: 5007,
  });
  assert.deepEqual(decodeAddress(bytes(224, 1, 1, 1, 0xff, 0xff)), {
    hostname: "224.1.1.1",
    port: 65535,
  });
});

test("decodeAddress() reads an 18-byte IPv6 value in RFC 5952 form", () => {
  assert.deepEqual(
    decodeAddress(
      bytes(
        0x20,
        0x01,
        0x0d,
        0xb8,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        1,
        0x13,
        0x8f,
      ),
    ),
    { hostname: "2001:db8::1", port: 5007 },
  );
  assert.deepEqual(decodeAddress(new Uint8Array(18)), {
    hostname: "::",
    port: 0,
  });
});

test("decodeAddress() reads an IPv4-mapped IPv6 value in mixed notation", () => {
  assert.deepEqual(
    decodeAddress(
      bytes(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4, 0, 80),
    ),
    { hostname: "::ffff:1.2.3.4", port: 80 },
  );
});

test("decodeAddress() throws MalformedDatagramError on any length but 6 or 18", () => {
  for (const n of [0, 1, 4, 5, 7, 16, 17, 19, 20, 36]) {
    assert.throws(
      () => decodeAddress(new Uint8Array(n)),
      MalformedDatagramError,
      `length ${n}`,
    );
  }
});

test("formatAddress() normalises IPv6 to RFC 5952", () => {
  const cases: [string, string][] = [
    // lowercase, leading zeros dropped
    ["2001:0DB8:0000:0000:0000:0000:0000:0001", "2001:db8::1"],
    // a single zero group is not compressed
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"],
    // the longest run wins
    ["2001:0:0:1:0:0:0:1", "2001:0:0:1::1"],
    // the first run wins a tie
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    // over-long "::" input is recompressed
    ["2001:db8::0:1", "2001:db8::1"],
    ["1::", "1::"],
    ["0:0:0:0:0:0:0:0", "::"],
    ["0::0:1", "::1"],
    ["fe80:0:0:0:0:0:0:0", "fe80::"],
    ["1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"],
    ["1:0:0:4:0:0:0:8", "1:0:0:4::8"],
    ["abcd:EF01::", "abcd:ef01::"],
    // an embedded IPv4 tail that is not IPv4-mapped becomes hex
    ["64:ff9b::192.0.2.33", "64:ff9b::c000:221"],
    ["::0.0.0.1", "::1"],
    // IPv4-mapped stays in mixed notation
    ["0:0:0:0:0:FFFF:7f00:1", "::ffff:127.0.0.1"],
  ];
  for (const [input, expected] of cases) {
    assert.equal(
      formatAddress({ hostname: input, port: 5007 }),
      `[${expected}]:5007`,
      input,
    );
  }
});

test("formatAddress() writes IPv4 as host:port", () => {
  assert.equal(
    formatAddress({ hostname: "1.2.3.4", port: 5007 }),
    "1.2.3.4:5007",
  );
  assert.equal(formatAddress({ hostname: "0.0.0.0", port: 0 }), "0.0.0.0:0");
});

test("formatAddress() throws a TypeError on a bad hostname or port", () => {
  assert.throws(() => formatAddress({ hostname: "nope", port: 1 }), TypeError);
  assert.throws(
    () => formatAddress({ hostname: "1.2.3.4", port: 70000 }),
    TypeError,
  );
});

test("isIPv4() accepts dotted quads only, without leading zeros", () => {
  for (
    const ok of [
      "0.0.0.0",
      "1.2.3.4",
      "255.255.255.255",
      "10.0.10.100",
      "199.249.200.209",
    ]
  ) {
    assert.equal(isIPv4(ok), true, ok);
  }
  for (
    const bad of [
      "",
      "1.2.3",
      "1.2.3.4.5",
      "256.1.1.1",
      "1.2.3.04",
      "01.2.3.4",
      "1.2.3.-4",
      " 1.2.3.4",
      "1.2.3.4 ",
      "1..3.4",
      "a.b.c.d",
      "0x1.2.3.4",
      "1.2.3.4\n",
    ]
  ) {
    assert.equal(isIPv4(bad), false, JSON.stringify(bad));
  }
});

test("isIPv6() accepts every RFC 4291 text form and nothing else", () => {
  for (
    const ok of [
      "::",
      "::1",
      "1::",
      "1:2:3:4:5:6:7:8",
      "1:2:3:4:5:6:7::",
      "::2:3:4:5:6:7:8",
      "1::8",
      "2001:DB8::abcd",
      "::ffff:1.2.3.4",
      "::1.2.3.4",
      "1:2:3:4:5:6:1.2.3.4",
      "1:2:3:4:5::1.2.3.4",
      "0000:0000:0000:0000:0000:0000:0000:0000",
    ]
  ) {
    assert.equal(isIPv6(ok), true, ok);
  }
  for (
    const bad of [
      "",
      ":",
      ":::",
      "1:2:3:4:5:6:7",
      "1:2:3:4:5:6:7:8:9",
      "1:2:3:4:5:6:7:8::",
      "::1:2:3:4:5:6:7:8",
      "1::2::3",
      ":1:2:3:4:5:6:7",
      "1:2:3:4:5:6:7:",
      "12345::",
      "g::",
      "fe80::1%eth0",
      "[::1]",
      "::ffff:1.2.3",
      "::ffff:256.1.1.1",
      "1.2.3.4::",
      "::1.2.3.4:1",
      "1:2:3:4:5:6:7:1.2.3.4",
      "1.2.3.4",
      " ::1",
    ]
  ) {
    assert.equal(isIPv6(bad), false, JSON.stringify(bad));
  }
});

test("isMulticastIPv4() is true for 224.0.0.0/4 only", () => {
  assert.equal(isMulticastIPv4("224.0.0.0"), true);
  assert.equal(isMulticastIPv4("224.1.1.1"), true);
  assert.equal(isMulticastIPv4("239.255.255.255"), true);
  assert.equal(isMulticastIPv4("223.255.255.255"), false);
  assert.equal(isMulticastIPv4("240.0.0.0"), false);
  assert.equal(isMulticastIPv4("ff02::1"), false);
  assert.equal(isMulticastIPv4("224.1.1"), false);
});

test("parseAddress() reads IPv4:PORT and [IPv6]:PORT", () => {
  assert.deepEqual(parseAddress("1.2.3.4:5007"), {
    hostname: "1.2.3.4",
    port: 5007,
  });
  assert.deepEqual(parseAddress("[::1]:0"), { hostname: "::1", port: 0 });
  assert.deepEqual(parseAddress("[2001:DB8:0:0::1]:65535"), {
    hostname: "2001:db8::1",
    port: 65535,
  });
  assert.deepEqual(parseAddress("[::ffff:10.0.0.1]:80"), {
    hostname: "::ffff:10.0.0.1",
    port: 80,
  });
});

test("parseAddress() takes localhost as 127.0.0.1", () => {
  assert.deepEqual(parseAddress("localhost:5007"), {
    hostname: "127.0.0.1",
    port: 5007,
  });
});

test("parseAddress() round-trips formatAddress()", () => {
  for (const text of ["10.1.2.3:9", "[fe80::1:2]:5007", "[::]:1"]) {
    assert.equal(formatAddress(parseAddress(text)), text);
  }
});

test("parseAddress() names the bad host and the expected form", () => {
  assert.throws(() => parseAddress("1.2.3:80"), {
    name: "TypeError",
    message:
      'Invalid address "1.2.3:80": "1.2.3" is not an IPv4 or IPv6 address; expected IPv4:PORT, [IPv6]:PORT or localhost:PORT',
  });
  assert.throws(
    () => parseAddress("example.com:80"),
    /"example\.com" is not an IPv4/,
  );
  assert.throws(
    () => parseAddress("[1.2.3.4]:80"),
    /"1\.2\.3\.4" is not an IPv6 address/,
  );
  assert.throws(
    () => parseAddress("[fe80::1%eth0]:80"),
    /"fe80::1%eth0" is not an IPv6/,
  );
});

test("parseAddress() asks for brackets around IPv6", () => {
  assert.throws(() => parseAddress("::1:5007"), {
    name: "TypeError",
    message:
      'Invalid address "::1:5007": an IPv6 address needs brackets; expected IPv4:PORT, [IPv6]:PORT or localhost:PORT',
  });
});

test("parseAddress() rejects a missing or malformed port", () => {
  const cases: [string, RegExp][] = [
    [
      "1.2.3.4",
      /missing ":PORT"; expected IPv4:PORT, \[IPv6\]:PORT or localhost:PORT/,
    ],
    ["[::1]", /missing "\]:PORT"/],
    ["[::1:80", /missing "\]:PORT"/],
    ["[::1]80", /missing "\]:PORT"/],
    ["1.2.3.4:", /port "" is not an integer from 0 to 65535/],
    ["1.2.3.4:65536", /port "65536" is not an integer from 0 to 65535/],
    ["1.2.3.4:-1", /port "-1"/],
    ["1.2.3.4:5e3", /port "5e3"/],
    ["1.2.3.4:0x10", /port "0x10"/],
    ["1.2.3.4: 80", /port " 80"/],
    ["1.2.3.4:80.0", /port "80\.0"/],
    ["[::1]:123456", /port "123456"/],
    ["", /missing ":PORT"/],
  ];
  for (const [text, message] of cases) {
    assert.throws(() => parseAddress(text), (e: unknown) => {
      assert.ok(e instanceof TypeError, text);
      assert.match(e.message, message, text);
      assert.ok(
        e.message.startsWith(`Invalid address ${JSON.stringify(text)}: `),
        text,
      );
      return true;
    });
  }
});
