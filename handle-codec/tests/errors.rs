//! Every way a handle can be wrong gives its own error, and the message names the part and the fix.

use handle_codec::{
    ChecksumError, DecodeError, NameError, PathScheme, SourceType, UrlError, decode, decode_bytes,
};

const CK: &str = "bd79ab9e6d45abf4f3f0adf552a868074dd235c4698ce7258d521160e0ad79ffe555b94e7d4007add6e1a25f4526885eb25c53ce38f7d344dd4925b9f2cb5d3b";

fn bi(query: &str) -> String {
    format!("bi://backing?{query}")
}

/// (input, expected error, words the message must contain)
fn table() -> Vec<(String, DecodeError, Vec<&'static str>)> {
    use DecodeError::*;
    let export = "backingImage=b&backingImageDataSourceType=export-from-volume";
    vec![
        (
            "".into(),
            Empty,
            vec!["empty", "snap://<volume>/<snapshot>"],
        ),
        (
            "vol/backup-1".into(),
            MissingScheme {
                handle: "vol/backup-1".into(),
            },
            vec!["no type prefix", "bak://"],
        ),
        (
            "://vol/b".into(),
            MissingScheme {
                handle: "://vol/b".into(),
            },
            vec!["no type prefix"],
        ),
        (
            "snap:/vol/b".into(),
            MissingScheme {
                handle: "snap:/vol/b".into(),
            },
            vec!["snap://"],
        ),
        (
            "nfs://vol/b".into(),
            UnknownType {
                found: "nfs".into(),
            },
            vec!["invalid CSI snapshot type", "\"nfs\"", "bi://backing?"],
        ),
        (
            "SNAP://vol/b".into(),
            UnknownType {
                found: "SNAP".into(),
            },
            vec!["lowercase"],
        ),
        (
            "snap://vol/b\n".into(),
            ControlCharacter { offset: 12 },
            vec!["control character", "byte 12"],
        ),
        (
            "snap://".into(),
            EmptyVolume {
                scheme: PathScheme::Snap,
            },
            vec!["empty volume", "snap://<volume>/<snapshot>"],
        ),
        (
            "bak:///b".into(),
            EmptyVolume {
                scheme: PathScheme::Bak,
            },
            vec!["empty volume", "bak://<volume>/<backup>"],
        ),
        (
            "bs://vol".into(),
            MissingId {
                scheme: PathScheme::Bs,
                handle: "bs://vol".into(),
            },
            vec!["'/<backup>'", "bs://<volume>/<backup>"],
        ),
        (
            "snap://vol/".into(),
            EmptyId {
                scheme: PathScheme::Snap,
            },
            vec!["empty snapshot name"],
        ),
        (
            "snap://vol/s/x".into(),
            ExtraPathSegments {
                scheme: PathScheme::Snap,
                extra: "/x".into(),
            },
            vec!["extra path segments", "%2F"],
        ),
        (
            "bak://vol/b/".into(),
            ExtraPathSegments {
                scheme: PathScheme::Bak,
                extra: "/".into(),
            },
            vec!["extra path segments"],
        ),
        (
            "snap://a://b/c".into(),
            EmptyId {
                scheme: PathScheme::Snap,
            },
            vec!["empty snapshot name"],
        ),
        (
            "snap://v%2/s".into(),
            InvalidPercentEncoding {
                part: "volume name".into(),
                offset: 1,
            },
            vec!["volume name", "%25"],
        ),
        (
            "snap://v/s%zz".into(),
            InvalidPercentEncoding {
                part: "snapshot name".into(),
                offset: 1,
            },
            vec!["snapshot name", "two hex digits"],
        ),
        (
            "snap://v/%ff".into(),
            InvalidUtf8 {
                part: "snapshot name".into(),
            },
            vec!["not UTF-8"],
        ),
        (
            "snap://%20v/s".into(),
            InvalidName {
                part: "volume name".into(),
                value: " v".into(),
                reason: NameError::SurroundingWhitespace,
            },
            vec!["volume name", "whitespace"],
        ),
        (
            "bak://v/a%0Ab".into(),
            InvalidName {
                part: "backup name".into(),
                value: "a\nb".into(),
                reason: NameError::ControlCharacter { ch: '\n', at: 1 },
            },
            vec!["backup name", "control character"],
        ),
        (
            format!("snap://{}/s", "v".repeat(254)),
            InvalidName {
                part: "volume name".into(),
                value: format!("{}... (254 bytes in all)", "v".repeat(120)),
                reason: NameError::TooLong { len: 254 },
            },
            vec!["253"],
        ),
        (
            "bi://other?backingImage=b".into(),
            BackingImageHost {
                found: "other".into(),
            },
            vec!["bi://backing?"],
        ),
        (
            "bi://backing/?backingImage=b".into(),
            BackingImageHost {
                found: "backing/".into(),
            },
            vec!["bi://backing?"],
        ),
        (
            bi("backingImage=b#frag"),
            FragmentNotAllowed { offset: 27 },
            vec!["'#'", "%23"],
        ),
        (
            bi("backingImage=b;backingImageDataSourceType=upload"),
            SemicolonInQuery {
                pair: "backingImage=b;backingImageDataSourceType=upload".into(),
            },
            vec!["';'", "%3B", "'&'"],
        ),
        (
            bi("=x"),
            EmptyParameterName { pair: "=x".into() },
            vec!["empty name"],
        ),
        (
            bi("backingImage=b&backingImage=c"),
            DuplicateParameter {
                key: "backingImage".into(),
            },
            vec!["more than once"],
        ),
        (
            bi("backingImage%=b"),
            InvalidPercentEncoding {
                part: "query parameter name".into(),
                offset: 12,
            },
            vec!["query parameter name"],
        ),
        (
            bi("backingImage=%e9"),
            InvalidUtf8 {
                part: "value of query parameter \"backingImage\"".into(),
            },
            vec!["backingImage"],
        ),
        (
            "bi://backing".into(),
            MissingParameter {
                key: "backingImage",
                hint: "backing image name",
            },
            vec![
                "lacks the required parameter backingImage",
                "&backingImage=<",
            ],
        ),
        (
            bi("backingImageDataSourceType=upload"),
            MissingParameter {
                key: "backingImage",
                hint: "backing image name",
            },
            vec!["backingImage"],
        ),
        (
            bi("backingImage=b"),
            MissingParameter {
                key: "backingImageDataSourceType",
                hint: "download, export-from-volume, upload, restore or clone",
            },
            vec!["backingImageDataSourceType"],
        ),
        (
            bi("backingImage=&backingImageDataSourceType=upload"),
            EmptyParameter {
                key: "backingImage",
                hint: "backing image name",
            },
            vec!["is empty"],
        ),
        (
            bi("backingImage=Bad_Name&backingImageDataSourceType=upload"),
            InvalidName {
                part: "backingImage name".into(),
                value: "Bad_Name".into(),
                reason: NameError::NotObjectNameCharacter { ch: 'B', at: 0 },
            },
            vec!["backingImage name", "lowercase"],
        ),
        (
            bi("backingImage=b&backingImageDataSourceType=ftp"),
            UnknownSourceType {
                found: "ftp".into(),
            },
            vec!["backingImageDataSourceType", "export-from-volume"],
        ),
        (
            bi(&format!("{export}&url=http://h/")),
            ParameterNotForSourceType {
                key: "url",
                source_type: SourceType::ExportFromVolume,
            },
            vec!["url", "export-from-volume", "remove it"],
        ),
        (
            bi(export),
            MissingParameter {
                key: "volume-name",
                hint: "volume name",
            },
            vec!["volume-name"],
        ),
        (
            bi(&format!("{export}&volume-name=v&export-type=vmdk")),
            BadExportType {
                found: "vmdk".into(),
            },
            vec!["raw or qcow2"],
        ),
        (
            bi(&format!("{export}&volume-name=v&export-type=QCOW2")),
            BadExportType {
                found: "QCOW2".into(),
            },
            vec!["raw or qcow2"],
        ),
        (
            bi(&format!("{export}&volume-name=v&backingImageChecksum=abc")),
            BadChecksum {
                key: "backingImageChecksum",
                reason: ChecksumError::WrongLength { len: 3 },
            },
            vec!["backingImageChecksum", "128 lowercase hex"],
        ),
        (
            bi(&format!(
                "{export}&volume-name=v&backingImageChecksum={}",
                CK.to_uppercase()
            )),
            BadChecksum {
                key: "backingImageChecksum",
                reason: ChecksumError::NotLowercaseHex { ch: 'B', at: 0 },
            },
            vec!["lowercase hex"],
        ),
        (
            bi("backingImage=b&backingImageDataSourceType=download"),
            MissingParameter {
                key: "url",
                hint: "http(s) URL",
            },
            vec!["url"],
        ),
        (
            bi("backingImage=b&backingImageDataSourceType=download&url=ftp%3A%2F%2Fh%2Fx"),
            NonHttpUrl {
                key: "url",
                value: "ftp://h/x".into(),
                reason: UrlError::NotHttp {
                    scheme: "ftp".into(),
                },
            },
            vec!["http or https"],
        ),
        (
            bi("backingImage=b&backingImageDataSourceType=download&url=h%2Fx"),
            InvalidUrl {
                key: "url",
                value: "h/x".into(),
                reason: UrlError::Invalid {
                    reason: "relative URL without a base".into(),
                },
            },
            vec!["not a valid absolute URL", "percent-encode"],
        ),
        (
            bi("backingImage=b&backingImageDataSourceType=download&url=http://h/a+b"),
            InvalidUrl {
                key: "url",
                value: "http://h/a b".into(),
                reason: UrlError::Unprintable { ch: ' ', at: 10 },
            },
            vec!["%20"],
        ),
        (
            bi("backingImage=b&backingImageDataSourceType=download&url=http://h/&checksum=x"),
            BadChecksum {
                key: "checksum",
                reason: ChecksumError::NotLowercaseHex { ch: 'x', at: 0 },
            },
            vec!["checksum"],
        ),
        (
            bi(
                "backingImage=b&backingImageDataSourceType=restore&backup-url=s3://x&concurrent-limit=-1",
            ),
            BadConcurrentLimit { found: "-1".into() },
            vec!["whole number"],
        ),
        (
            bi("backingImage=b&backingImageDataSourceType=clone&backing-image=s&encryption=rot13"),
            BadEncryption {
                found: "rot13".into(),
            },
            vec!["encrypt, decrypt or ignore"],
        ),
        (
            bi("backingImage=b&backingImageDataSourceType=clone"),
            MissingParameter {
                key: "backing-image",
                hint: "source backing image name",
            },
            vec!["backing-image"],
        ),
    ]
}

#[test]
fn each_wrong_part_has_its_error_and_message() {
    for (input, expected, words) in table() {
        let error = match decode(&input) {
            Err(error) => error,
            Ok(value) => panic!("{input:?} decoded to {value:?}"),
        };
        assert_eq!(error, expected, "input {input:?}");
        let message = error.to_string();
        for word in words {
            assert!(
                message.contains(word),
                "message {message:?} for {input:?} lacks {word:?}"
            );
        }
    }
}

#[test]
fn non_utf8_bytes_are_an_error() {
    assert_eq!(
        decode_bytes(b"snap://v/\xff"),
        Err(DecodeError::NotUtf8 { valid_up_to: 9 })
    );
    assert!(decode_bytes(b"snap://v/s").is_ok());
}

#[test]
fn quoted_input_is_cut() {
    let long = format!("x{}", "y".repeat(10_000));
    let message = match decode(&long) {
        Err(error) => error.to_string(),
        Ok(value) => panic!("decoded {value:?}"),
    };
    assert!(message.len() < 500, "{} bytes", message.len());
    assert!(message.contains("10001 bytes in all"));
}
