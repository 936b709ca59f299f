// UI strings in English and Korean; the browser's preferred languages pick one (Korean when it comes first).
const STRINGS = {
  en: {
    "skip": "Skip to content",
    "nav.batches": "Batches", "nav.upload": "Upload", "nav.search": "Search", "nav.main": "Main",
    "key.title": "Sign in with an API key",
    "key.help": "The key is kept in this browser tab only (session storage) and sent as a Bearer token.",
    "key.label": "API key", "key.submit": "Continue", "key.checking": "Checking the key…",
    "key.rejected": "This API key was not accepted (401: {detail}). Check the key and try again.",
    "key.missing": "Enter an API key.",
    "key.signout": "Change key",
    "error.network": "The service could not be reached ({detail}). Check that it is running, then retry.",
    "error.http": "{status}: {detail}",
    "batches.title": "My batches", "batches.empty": "No batches yet.", "batches.new": "Upload a batch",
    "batches.name": "Name", "batches.created": "Created", "batches.status": "Status", "batches.progress": "Progress",
    "batches.files": "Files", "batches.filter": "Status", "batches.any": "Any",
    "page.next": "Next page", "page.prev": "Previous page", "page.number": "Page {n}",
    "status.pending": "pending", "status.processing": "processing", "status.completed": "completed",
    "status.failed": "failed", "status.cancelled": "cancelled", "status.ok": "ok", "status.skipped": "skipped",
    "batch.title": "Batch {name}", "batch.unnamed": "(unnamed)", "batch.progress": "Progress",
    "batch.counts": "{processed} of {total} files", "batch.succeeded": "Succeeded", "batch.failed": "Failed",
    "batch.skipped": "Skipped", "batch.rate": "Files/s", "batch.eta": "Time left", "batch.elapsed": "Elapsed",
    "batch.live": "Live", "batch.reconnecting": "Reconnecting…", "batch.done": "Batch {status}.",
    "batch.cancel": "Cancel batch", "batch.retry": "Retry failed files", "batch.cancel.confirm": "Cancel this batch?",
    "batch.requested": "Requested.",
    "files.title": "Files", "files.name": "Name", "files.status": "Status", "files.pages": "Pages",
    "files.reason": "Failure reason", "files.filter.status": "Status", "files.filter.name": "Name contains",
    "files.empty": "No files to show yet: a file appears here once its result is stored.",
    "file.title": "{name}", "file.back": "Back to the batch", "file.page": "Page", "file.of": "of {n}",
    "file.text": "Text", "file.copy": "Copy text", "file.copied": "Copied.", "file.txt": "Download .txt",
    "file.json": "Download .json", "file.legend": "Box colour: word confidence",
    "file.high": "≥ 90 %", "file.mid": "70–90 %", "file.low": "< 70 %", "file.words": "{n} words",
    "file.noimage": "The page image could not be shown: {detail}", "file.failed": "This file failed: {reason}",
    "file.words.label": "Recognized words; use the arrow keys to move between them",
    "file.prevpage": "Previous page", "file.nextpage": "Next page",
    "search.title": "Search", "search.label": "Search the text of my pages", "search.submit": "Search",
    "search.empty": "No pages match.", "search.page": "page {n}", "search.thumb": "Page {n} of {name}, matches highlighted",
    "upload.title": "Upload a batch",
    "upload.drop": "Drop files or a folder here",
    "upload.files": "Choose files", "upload.folder": "Choose a folder",
    "upload.selected": "{n} files selected, {size}", "upload.none": "No files selected.",
    "upload.name": "Batch name", "upload.languages": "Languages", "upload.submit": "Upload",
    "upload.sending": "Uploading {percent} % ({sent} of {size})", "upload.waiting": "Stored; waiting for the 202…",
    "upload.skipped": "{n} hidden files skipped", "upload.rejected": "The upload was refused",
    "seconds": "{n} s", "minutes": "{m} min {s} s", "unknown": "—",
  },
  ko: {
    "skip": "본문으로 건너뛰기",
    "nav.batches": "배치 목록", "nav.upload": "업로드", "nav.search": "검색", "nav.main": "주 메뉴",
    "key.title": "API 키로 로그인",
    "key.help": "키는 이 브라우저 탭에만(세션 저장소) 보관되며 Bearer 토큰으로 전송됩니다.",
    "key.label": "API 키", "key.submit": "계속", "key.checking": "키를 확인하는 중…",
    "key.rejected": "이 API 키는 허용되지 않았습니다(401: {detail}). 키를 확인하고 다시 시도하세요.",
    "key.missing": "API 키를 입력하세요.",
    "key.signout": "키 변경",
    "error.network": "서비스에 연결할 수 없습니다({detail}). 실행 중인지 확인한 뒤 다시 시도하세요.",
    "error.http": "{status}: {detail}",
    "batches.title": "내 배치", "batches.empty": "아직 배치가 없습니다.", "batches.new": "배치 업로드",
    "batches.name": "이름", "batches.created": "생성 시각", "batches.status": "상태", "batches.progress": "진행률",
    "batches.files": "파일", "batches.filter": "상태", "batches.any": "전체",
    "page.next": "다음 페이지", "page.prev": "이전 페이지", "page.number": "{n}페이지",
    "status.pending": "대기", "status.processing": "처리 중", "status.completed": "완료",
    "status.failed": "실패", "status.cancelled": "취소됨", "status.ok": "성공", "status.skipped": "건너뜀",
    "batch.title": "배치 {name}", "batch.unnamed": "(이름 없음)", "batch.progress": "진행률",
    "batch.counts": "파일 {total}개 중 {processed}개", "batch.succeeded": "성공", "batch.failed": "실패",
    "batch.skipped": "건너뜀", "batch.rate": "초당 파일", "batch.eta": "남은 시간", "batch.elapsed": "경과 시간",
    "batch.live": "실시간", "batch.reconnecting": "다시 연결하는 중…", "batch.done": "배치 {status}.",
    "batch.cancel": "배치 취소", "batch.retry": "실패한 파일 재시도", "batch.cancel.confirm": "이 배치를 취소할까요?",
    "batch.requested": "요청했습니다.",
    "files.title": "파일", "files.name": "이름", "files.status": "상태", "files.pages": "페이지",
    "files.reason": "실패 이유", "files.filter.status": "상태", "files.filter.name": "이름 포함",
    "files.empty": "아직 표시할 파일이 없습니다. 결과가 저장되면 여기에 나타납니다.",
    "file.title": "{name}", "file.back": "배치로 돌아가기", "file.page": "페이지", "file.of": "/ {n}",
    "file.text": "텍스트", "file.copy": "텍스트 복사", "file.copied": "복사했습니다.", "file.txt": ".txt 내려받기",
    "file.json": ".json 내려받기", "file.legend": "상자 색: 단어 신뢰도",
    "file.high": "90 % 이상", "file.mid": "70–90 %", "file.low": "70 % 미만", "file.words": "단어 {n}개",
    "file.noimage": "페이지 이미지를 표시할 수 없습니다: {detail}", "file.failed": "이 파일은 실패했습니다: {reason}",
    "file.words.label": "인식된 단어; 화살표 키로 단어 사이를 이동합니다",
    "file.prevpage": "이전 페이지", "file.nextpage": "다음 페이지",
    "search.title": "검색", "search.label": "내 페이지의 텍스트 검색", "search.submit": "검색",
    "search.empty": "일치하는 페이지가 없습니다.", "search.page": "{n}페이지", "search.thumb": "{name}의 {n}페이지, 일치 부분 강조",
    "upload.title": "배치 업로드",
    "upload.drop": "파일이나 폴더를 여기에 끌어다 놓으세요",
    "upload.files": "파일 선택", "upload.folder": "폴더 선택",
    "upload.selected": "파일 {n}개 선택됨, {size}", "upload.none": "선택된 파일이 없습니다.",
    "upload.name": "배치 이름", "upload.languages": "언어", "upload.submit": "업로드",
    "upload.sending": "업로드 중 {percent} % ({size} 중 {sent})", "upload.waiting": "저장됨, 202 응답을 기다리는 중…",
    "upload.skipped": "숨김 파일 {n}개 건너뜀", "upload.rejected": "업로드가 거부되었습니다",
    "seconds": "{n}초", "minutes": "{m}분 {s}초", "unknown": "—",
  },
};

export const lang = (navigator.languages || [navigator.language || "en"])
  .map((l) => l.toLowerCase().slice(0, 2)).find((l) => l in STRINGS) || "en";

export function t(key, values = {}) {
  const text = STRINGS[lang][key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ""));
}

export function duration(seconds) {
  if (seconds == null || !isFinite(seconds)) return t("unknown");
  const s = Math.max(0, Math.round(seconds));
  return s < 60 ? t("seconds", { n: s }) : t("minutes", { m: Math.floor(s / 60), s: s % 60 });
}

export function bytes(n) {
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function dateTime(iso) {
  return iso ? new Date(iso).toLocaleString(lang === "ko" ? "ko-KR" : "en") : t("unknown");
}
